package main
import (
 _ "github.com/alecthomas/kong"
 _ "github.com/gofrs/flock"
 _ "github.com/google/shlex"
 _ "filippo.io/edwards25519"
)
func main(){}
