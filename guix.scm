;;; guix.scm: build and install offload with Guix:
;;;
;;;   guix build -f guix.scm
;;;   guix package -f guix.scm      ; or install it into a profile
;;;
;;; The dependency list mirrors go.mod (keep the two in step); Guix builds with the
;;; versions it packages, which speak the same API for what offload uses.
;;; This file follows the Guix manual's rules for go-build-system packages; it cannot
;;; be built on the machines this project is developed on (no Guix there). The code
;;; builds with Go 1.24 (checked with go1.24.6 against the oldest dependency versions
;;; Guix packaged in 2025: kong 1.12, flock 0.12, klauspost/compress 1.18, x/sys 0.33).
;;;
;;; On Guix System the daemon's PATH holds only tar and gzip: the binary finds its ssh
;;; through the path fixed at build time (sshexec.BuiltinSSH), set here to the openssh
;;; input.

(use-modules (guix packages)
             (guix gexp)
             (guix git-download)
             (guix build-system go)
             ((guix licenses) #:prefix license:)
             (gnu packages golang)
             (gnu packages golang-build)
             (gnu packages golang-compression)
             (gnu packages golang-xyz)
             (gnu packages golang-crypto)
             (gnu packages ssh))

(define %source-dir (dirname (current-filename)))

(package
  (name "offload")
  (version "0.1.0")
  (source (local-file %source-dir "offload-checkout"
                      #:recursive? #t
                      #:select? (git-predicate %source-dir)))
  (build-system go-build-system)
  (arguments
   (list
    ;; go.mod declares the module "offload"; go-build-system unpacks the source
    ;; under that import path.
    #:import-path "offload"
    #:go go-1.24
    #:install-source? #f
    #:build-flags
    #~(list (string-append "-ldflags=-X offload/sshexec.BuiltinSSH="
                           #$(this-package-input "openssh") "/bin/ssh"))
    ;; The tests start sshd and need nix-store; they run with `make test`.
    #:tests? #f))
  (inputs (list openssh))                  ;the ssh client offload drives
  (native-inputs
   (list go-github-com-alecthomas-kong
         go-github-com-gofrs-flock
         go-github-com-google-shlex
         go-github-com-klauspost-compress
         go-filippo-io-edwards25519
         go-golang-org-x-sys))
  (home-page "https://example.org/offload")
  (synopsis "Build hook that offloads guix-daemon builds over SSH")
  (description
   "offload is a build hook for guix-daemon, in Go: it sends builds to the machines
listed in @file{/etc/guix/machines.scm} over the system's OpenSSH client, choosing the
best free machine, and restores the signed results into the local store.  Installed as
the daemon's @env{GUIX} program, it hands every other sub-command to the real
@command{guix}.")
  (license license:gpl3+))
