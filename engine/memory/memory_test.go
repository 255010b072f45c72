package memory_test

import (
	"testing"

	"github.com/meridiankv/meridian/engine"
	"github.com/meridiankv/meridian/engine/enginetest"
	"github.com/meridiankv/meridian/engine/memory"
)

func TestConformance(t *testing.T) {
	enginetest.Run(t, func(*testing.T) engine.Engine { return memory.New() })
}
