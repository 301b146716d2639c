//go:build race

package testenv

// raceEnabled is true when this package is compiled with -race; the test
// wrappers then build Shoal's binaries with -race too, so that a data race in
// a server process fails the test that provoked it.
const raceEnabled = true
