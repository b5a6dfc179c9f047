;; Guix System's wrapper, with an entry whose host key is read from a file, as
;; services write it.
((@ (srfi srfi-1) append-map)
 (lambda (entry)
   (if (build-machine? entry)
       (list entry)
       entry))
 (list (build-machine
        (name "eightysix.example.org")
        (systems (list "x86_64-linux"))
        (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ1 root@(none)")
        (user "bob")
       (private-key "/root/.ssh/id_ed25519"))
       (list (build-machine
              (name "localhost")
              (port 11022)
              (systems '("x86_64-linux" "i686-linux"))
              (user "offloading")
              (host-key (call-with-input-file "testdata/vm_ssh_host_ed25519_key.pub"
                          (@ (ice-9 textual-ports) get-string-all)))
              (private-key "/etc/guix/offload/ssh/id_ed25519")))))
