;;; Stand-in for Guix's (gnu) module, which machines files often use: in Guix it
;;; re-exports the modules of the operating system; the files only need it to exist.
;;; Written for offload's tests.
(define-module (gnu))
