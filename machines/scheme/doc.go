// Package scheme is offload's small Scheme interpreter: the reader, the values, the
// evaluator with its special forms, the builtin procedures and the module references
// (@ (MODULE) NAME) that files such as Guix's machines.scm use. It answers in well
// under a millisecond, bounds the work a hostile file can make it do, and places every
// error at FILE:LINE:COL in the text it read.
//
// It knows no record type of its own: a program adds its syntax, procedures and modules
// through Interp.DefineSyntax, Interp.Define and Interp.DefineModule, and carries its
// own values as Records (package machines adds build-machine this way). What is valid
// Guile but beyond this interpreter (primitive-load, macros, other modules) is an
// *Error with Unsupported set, so that a caller may hand the file to Guile instead.
// It starts no process and reads no file but those a file opens with
// call-with-input-file.
package scheme
