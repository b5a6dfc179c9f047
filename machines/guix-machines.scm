;;; Part of offload (GPL-3.0-or-later).  Run by offload as
;;;
;;;   guix repl -- THIS-FILE MACHINES-FILE
;;;
;;; when its own evaluator cannot evaluate MACHINES-FILE (it uses primitive-load,
;;; a Guile procedure offload does not implement, ...).  It loads the file the way
;;; Guix's build hook does: with primitive-load, in a fresh user module that uses
;;; the module defining Guix's build-machine record, after setting HOME from the
;;; password database as the hook does first.  It prints what it found as data,
;;; on standard output after the line ";; offload-machines":
;;;
;;;   (offload-machines 1 ITEM ...)
;;;
;;; ITEM is (machine LOCATION (FIELD VALUE) ...), (error LOCATION MESSAGE) or
;;; (output TEXT), TEXT being what loading printed (Guix's warnings).  LOCATION
;;; is (FILE LINE COLUMN), both counted from 1, or #f.  VALUE is a string,
;;; number, boolean or list of them; (%symbol NAME) and (%object WRITTEN) stand
;;; for a symbol and for an object that has no read syntax.

(define %fields
  ;; The build-machine fields offload uses, each read with build-machine-FIELD.
  '(name port systems user private-key host-key parallel-builds speed features
    overload-threshold compression compression-level daemon-socket))

(define (find-module names predicate)
  ;; The first of the modules NAMES that exists and satisfies PREDICATE, or #f.
  (let loop ((names names))
    (if (null? names)
        #f
        (let ((module (false-if-exception
                       (resolve-module (car names) #:ensure #f))))
          (if (and module (predicate module))
              module
              (loop (cdr names)))))))

(define (bound module name)
  ;; The value of NAME in MODULE (private bindings included), or #f.  Evaluated
  ;; rather than looked up: record accessors and predicates are inlinable syntax.
  (and module (module-variable module name)
       (false-if-exception (eval name module))))

(define machine-module
  ;; Guix defines the record in (guix offload) since 2025, in
  ;; (guix scripts offload) before.
  (find-module '((guix offload) (guix scripts offload))
               (lambda (module)
                 (let ((public (module-public-interface module)))
                   (and public (module-variable public 'build-machine?))))))

(define location-module
  (find-module '((guix diagnostics) (guix utils))
               (lambda (module) (bound module 'location-line))))

(define (location->datum location)
  ;; LOCATION is Guix's <location> (line from 1, column from 0), or #f.
  (let ((file (bound location-module 'location-file))
        (line (bound location-module 'location-line))
        (column (bound location-module 'location-column))
        (location? (bound location-module 'location?)))
    (and location location? (location? location)
         (list (file location) (line location) (+ 1 (column location))))))

(define (properties->datum properties)
  ;; PROPERTIES: Guile source properties (line and column from 0), or #f.
  (let ((file (and (pair? properties) (assq-ref properties 'filename)))
        (line (and (pair? properties) (assq-ref properties 'line)))
        (column (and (pair? properties) (assq-ref properties 'column))))
    (and file line column (list file (+ line 1) (+ column 1)))))

(define (datum value)
  ;; VALUE as something offload's reader reads back.
  (cond ((or (string? value) (boolean? value) (null? value)) value)
        ((symbol? value) (list '%symbol (symbol->string value)))
        ((and (number? value) (exact-integer? value)) value)
        ((and (number? value) (real? value)) (exact->inexact value))
        ((list? value) (map datum value))
        (else (list '%object (object->string value)))))

(define (machine->datum machine)
  (let ((location (bound machine-module 'build-machine-location))
        (raw-systems (bound machine-module '%build-machine-systems)))
    `(machine
      ,(and location (location->datum (location machine)))
      ,@(let loop ((fields %fields) (result '()))
          (if (null? fields)
              (reverse result)
              (let* ((field (car fields))
                     (get (bound machine-module
                                 (symbol-append 'build-machine- field))))
                (loop (cdr fields)
                      (if (procedure? get)
                          (cons (list field (datum (get machine))) result)
                          result)))))
      ;; Guix before 2025 also had the deprecated 'system' field.
      ,@(if (and (procedure? raw-systems) (not (raw-systems machine)))
            '((%used-system #t))
            '()))))

(define (guile-message key args)
  ;; The message Guile prints for the exception KEY ARGS.
  (define (formatted subr message arguments)
    (string-append (if subr (simple-format #f "In procedure ~a: " subr) "")
                   (apply simple-format #f message
                          (if (list? arguments) arguments '()))))
  (define message? (@ (ice-9 exceptions) exception-with-message?))
  (define message (@ (ice-9 exceptions) exception-message))
  (define irritants? (@ (ice-9 exceptions) exception-with-irritants?))
  (define irritants (@ (ice-9 exceptions) exception-irritants))
  (cond ((and (eq? key '%exception) (pair? args) (message? (car args)))
         ;; A raised exception object (SRFI-35 conditions, Guix's messages).
         (let ((text (message (car args)))
               (more (if (irritants? (car args)) (irritants (car args)) '())))
           (if (string-index text #\~)
               (formatted #f text more)
               (string-join (cons text (map object->string more)) " "))))
        ((and (= (length args) 4) (string? (cadr args)))
         (formatted (car args) (cadr args) (caddr args)))
        (else (object->string (cons key args)))))

(define (error-item key args log)
  (case key
    ((quit)
     ;; 'exit', which Guix's 'leave' calls after printing why on stderr.
     (let ((lines (filter (lambda (line) (not (string-null? line)))
                          (string-split log #\newline))))
       (list 'error #f (if (null? lines)
                           "loading the file called exit"
                           (car (last-pair lines))))))
    ((syntax-error)
     ;; ARGS: WHO MESSAGE PROPERTIES FORM SUBFORM.
     (let* ((who (car args)) (message (cadr args))
            (form (and (> (length args) 3) (list-ref args 3)))
            (location (or (properties->datum (list-ref args 2))
                          (and form (properties->datum
                                     (source-properties form))))))
       (list 'error location
             (string-append (if who (simple-format #f "~a: " who) "")
                            message
                            (if form
                                (string-append " in form "
                                               (object->string form))
                                "")))))
    (else (list 'error #f (guile-message key args)))))

(define (tail text)
  (if (> (string-length text) 8192)
      (substring text (- (string-length text) 8192))
      text))

(define (all-machines? value)
  (or (null? value)
      (and (pair? value) (procedure? (bound machine-module 'build-machine?))
           ((bound machine-module 'build-machine?) (car value))
           (all-machines? (cdr value)))))

(define (evaluate file)
  ;; The items for FILE.
  (define log (open-output-string))
  (define (logged thunk)
    (with-output-to-port log
      (lambda () (with-error-to-port log thunk))))
  (let ((result
         (catch #t
           (lambda ()
             (logged
              (lambda ()
                (let ((value (save-module-excursion
                              (lambda ()
                                (let ((module (make-fresh-user-module)))
                                  (module-use! module
                                               (module-public-interface
                                                machine-module))
                                  (set-current-module module)
                                  (primitive-load file))))))
                  (if (and (list? value) (all-machines? value))
                      (map machine->datum value)
                      (list (list 'error #f "the file did not return a list of build machines (Guix's hook ignores such a file)")))))))
           (lambda (key . args)
             (list (error-item key args (get-output-string log)))))))
    (cons (list 'output (tail (get-output-string log))) result)))

(define (main file)
  (let ((out (current-output-port)))
    (let ((pw (false-if-exception (getpw (getuid)))))
      (when (and pw (string? (passwd:dir pw)))
        (setenv "HOME" (passwd:dir pw))))
    (set-port-encoding! out "UTF-8")
    (display ";; offload-machines\n" out)
    (write (cons* 'offload-machines 1
                  (if machine-module
                      (evaluate file)
                      (list (list 'error #f "this guix defines no build-machine record (no module (guix offload) or (guix scripts offload))"))))
           out)
    (newline out)))

(main (cadr (command-line)))
