;;; Stand-in for Guix's (guix offload): the build-machine record, with Guix's
;;; field names and defaults, for `guix repl` in offload's tests.  Written for
;;; offload's tests, after the fields documented in Guix's manual.
(define-module (guix offload)
  #:use-module (srfi srfi-9)
  #:use-module (guix diagnostics)
  #:export (build-machine
            build-machine?
            build-machine-name
            build-machine-port
            build-machine-systems
            build-machine-user
            build-machine-private-key
            build-machine-host-key
            build-machine-compression
            build-machine-compression-level
            build-machine-daemon-socket
            build-machine-overload-threshold
            build-machine-parallel-builds
            build-machine-speed
            build-machine-features
            build-machine-location))

(define-record-type <build-machine>
  (make-build-machine name port systems user private-key host-key
                      compression compression-level daemon-socket
                      overload-threshold parallel-builds speed features
                      location)
  build-machine?
  (name               build-machine-name)
  (port               build-machine-port)
  (systems            build-machine-systems)
  (user               build-machine-user)
  (private-key        build-machine-private-key)
  (host-key           build-machine-host-key)
  (compression        build-machine-compression)
  (compression-level  build-machine-compression-level)
  (daemon-socket      build-machine-daemon-socket)
  (overload-threshold build-machine-overload-threshold)
  (parallel-builds    build-machine-parallel-builds)
  (speed              build-machine-speed)
  (features           build-machine-features)
  (location           build-machine-location))

(define (default-private-key)
  (let ((home (getenv "HOME")))
    (and home (string-append home "/.ssh/id_rsa"))))

;; Each field with the thunk of its default, or #f when it is required.
(define %fields
  `((name . #f)
    (port . ,(lambda () 22))
    (systems . ,(lambda () #f))
    (user . #f)
    (private-key . ,default-private-key)
    (host-key . #f)
    (compression . ,(lambda () "zlib@openssh.com,zlib"))
    (compression-level . ,(lambda () 3))
    (daemon-socket . ,(lambda () "/var/guix/daemon-socket/socket"))
    (overload-threshold . ,(lambda () 0.8))
    (parallel-builds . ,(lambda () 1))
    (speed . ,(lambda () 1.0))
    (features . ,(lambda () '()))))

(define (field-ref machine field)
  (case field
    ((name) (build-machine-name machine))
    ((port) (build-machine-port machine))
    ((systems) (build-machine-systems machine))
    ((user) (build-machine-user machine))
    ((private-key) (build-machine-private-key machine))
    ((host-key) (build-machine-host-key machine))
    ((compression) (build-machine-compression machine))
    ((compression-level) (build-machine-compression-level machine))
    ((daemon-socket) (build-machine-daemon-socket machine))
    ((overload-threshold) (build-machine-overload-threshold machine))
    ((parallel-builds) (build-machine-parallel-builds machine))
    ((speed) (build-machine-speed machine))
    ((features) (build-machine-features machine))))

(define (%build-machine properties inits base)
  ;; INITS: alist of field name and value thunk; BASE: the record inherited, or #f.
  (let* ((loc (and properties (source-properties->location properties)))
         (value (lambda (field)
                  (cond ((assq field inits) => (lambda (init) ((cdr init))))
                        (base (field-ref base field))
                        (else ((cdr (assq field %fields)))))))
         (values (map (lambda (field) (value (car field))) %fields)))
    (unless (list-ref values 2)
      (leave loc "The build-machine object lacks a value for its 'systems' field."))
    (apply make-build-machine (append values (list loc)))))

(define-syntax build-machine
  (lambda (s)
    (define names
      '(name port systems user private-key host-key compression
        compression-level daemon-socket overload-threshold parallel-builds
        speed features))
    (define required '(name user host-key))
    (syntax-case s ()
      ((_ clause ...)
       (let loop ((clauses #'(clause ...)) (seen '()) (base #f) (inits '()))
         (syntax-case clauses ()
           (()
            (let ((missing (filter (lambda (f) (not (memq f seen))) required)))
              (when (and (not base) (pair? missing))
                (syntax-violation 'build-machine
                                  (simple-format #f "missing field initializers ~a"
                                                 missing)
                                  s))
              #`(%build-machine '#,(datum->syntax s (syntax-source s))
                                (list #,@(reverse inits))
                                #,(or base #'#f))))
           (((inherit expr) rest ...)
            (and (identifier? #'inherit)
                 (eq? (syntax->datum #'inherit) 'inherit)
                 (null? seen) (not base))
            (loop #'(rest ...) seen #'expr inits))
           (((field expr) rest ...)
            (identifier? #'field)
            (let ((name (syntax->datum #'field)))
              (unless (memq name names)
                (syntax-violation 'build-machine "unknown field" s
                                  (car clauses)))
              (when (memq name seen)
                (syntax-violation 'build-machine "duplicate field" s
                                  (car clauses)))
              (loop #'(rest ...) (cons name seen) base
                    (cons #'(cons 'field (lambda () expr)) inits))))
           ((other rest ...)
            (syntax-violation 'build-machine "invalid field specifier" s
                              #'other))))))))
