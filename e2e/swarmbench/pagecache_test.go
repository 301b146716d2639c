package main

import (
	"os"
	"testing"
)

func TestPageCacheWriteCostLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	fresh, warm, err := pageCacheWriteCost(dir, 64<<20+123)
	if err != nil {
		t.Fatal(err)
	}
	if fresh <= 0 || warm <= 0 {
		t.Errorf("writing 64 MiB cost %v and %v of CPU; want both above zero", fresh, warm)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the probe left %d files in %s", len(left), dir)
	}
}
