package main

import (
	"bytes"
	"context"
)

// cliRunner returns a function that runs the meridian CLI with args under
// ctx and returns what it printed to standard output.
func cliRunner(ctx context.Context) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
}
