package drv

import "offload/storeio"

// The derivation type and its ATerm reader and writer are the product's
// (storeio/derivation.go); the test tools use the same ones.
type (
	Derivation = storeio.Derivation
	Output     = storeio.Output
	InputDrv   = storeio.InputDrv
	EnvVar     = storeio.EnvVar
)

// Parse reads the ATerm text of a .drv file (storeio.ParseDerivation).
func Parse(path string, text []byte) (*Derivation, error) { return storeio.ParseDerivation(path, text) }
