;;; A machines file written the way users write them: modules, defines,
;;; helpers, map over host names, quasiquote.
(use-modules (gnu) (guix) (srfi srfi-1))

#| Block comments
   #| nest |#
   and are skipped. |#

(define %key-dir "/etc/guix/keys/")
(define (key name) (string-append %key-dir name ".key"))

(define common-features '("kvm" "big-mem"))

(define (node host speed)
  (build-machine
    (name (string-append host ".lan"))
    (port 2222)
    (systems '("x86_64-linux"))
    (host-key "ssh-ed25519 AAAAnode")
    (user "offload")
    (private-key (key host))
    (speed speed)
    (features common-features)))

(define arm
  (let* ((base "arm")
         (host (string-append base "64.example.org")))
    (build-machine
      (name host)
      (systems (cons "aarch64-linux" (list "armhf-linux")))
      (host-key "ssh-ed25519 AAAAarm")
      (user "alice")
      (parallel-builds 4)
      (overload-threshold #f)
      #;(speed 99)
      (ssh-options "-o ServerAliveInterval=10"))))

(define old
  (let ((sys "i686-linux"))
    (build-machine
      (name "old.example.org")
      (system sys)
      (host-key "ssh-rsa AAAAold \"quoted\" back\\slash\ttab")
      (user "root")
      (speed 0.5)
      (overload-threshold 0.6)
      (compression "none")
      (compression-level 9)
      (daemon-socket "/run/guix/socket")
      (ssh-options (list "-o" "Ciphers=aes128-ctr")))))

(append (map node '("n1" "n2") (list 2. 4.0))
        `(,arm ,@(list old)))
