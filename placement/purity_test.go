package placement

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPure keeps the pure packages pure: no network, filesystem, clock or
// global randomness in their non-test code.
func TestPure(t *testing.T) {
	for _, dir := range []string{".", "../version"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range parsed.Imports {
				switch strings.Trim(imp.Path.Value, `"`) {
				case "net", "os", "math/rand", "math/rand/v2", "net/http", "io/ioutil":
					t.Errorf("%s imports %s: pure packages take I/O and randomness as arguments", f, imp.Path.Value)
				}
			}
			if strings.Contains(string(src), "time.Now(") {
				t.Errorf("%s calls time.Now: pass time in", f)
			}
		}
	}
}
