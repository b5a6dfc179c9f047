;;; Stand-in for Guix's (guix) module, which machines files often use: in Guix it
;;; re-exports the core modules; the files only need it to exist, and build-machine
;;; from (guix offload).  Written for offload's tests.
(define-module (guix)
  #:use-module (guix offload)
  #:re-export (build-machine build-machine?))
