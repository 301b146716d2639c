package main

import "context"

func runSingle(ctx context.Context, c config, bins binaries, dir string) error  { return nil }
func runTracker(ctx context.Context, c config, bins binaries, dir string) error { return nil }
