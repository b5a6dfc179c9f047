;;; Stand-in for the part of Guix's (guix diagnostics) that build machines use:
;;; source locations and 'leave'.  Written for offload's tests.
(define-module (guix diagnostics)
  #:use-module (srfi srfi-9)
  #:export (location
            location?
            location-file
            location-line
            location-column
            source-properties->location
            location->string
            leave))

;; As in Guix: LINE counts from 1, COLUMN from 0.
(define-record-type <location>
  (location file line column)
  location?
  (file   location-file)
  (line   location-line)
  (column location-column))

(define (source-properties->location properties)
  (let ((file (assq-ref properties 'filename))
        (line (assq-ref properties 'line))
        (column (assq-ref properties 'column)))
    (and file line column (location file (+ line 1) column))))

(define (location->string loc)
  (simple-format #f "~a:~a:~a" (location-file loc) (location-line loc)
                 (location-column loc)))

(define (leave loc message)
  ;; Print "FILE:LINE:COLUMN: error: MESSAGE" and exit 1, as Guix does.
  (simple-format (current-error-port) "~a: error: ~a~%"
                 (if loc (location->string loc) "guix") message)
  (exit 1))
