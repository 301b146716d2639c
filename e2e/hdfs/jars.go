package hdfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/shoal-dev/shoal/internal/checkout"
)

//go:embed pom.xml
var pom []byte

//go:embed MiniHdfs.java
var launcher []byte

// fetchJars returns a directory holding the Hadoop jars and MiniHdfs.java,
// running Maven the first time. The directory is named after a hash of
// pom.xml, so changing the pinned version fetches afresh instead of mixing
// jars of two versions. Concurrent test packages (go test ./...) serialize
// on a lock file so that only one of them downloads.
func fetchJars(ctx context.Context, root string) (string, error) {
	if root == "" {
		root = os.Getenv("SHOAL_HDFS_JARS")
	}
	if root == "" {
		var err error
		if root, err = defaultJarRoot(); err != nil {
			return "", err
		}
	}
	sum := sha256.Sum256(pom)
	dir := filepath.Join(root, "pom-"+hex.EncodeToString(sum[:6]))
	done := filepath.Join(dir, ".complete")

	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("fetch Hadoop jars: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("fetch Hadoop jars: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("fetch Hadoop jars: lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing the file unlocks too

	if _, err := os.Stat(done); err != nil {
		if err := mavenFetch(ctx, dir); err != nil {
			return "", err
		}
		if err := os.WriteFile(done, nil, 0o644); err != nil {
			return "", fmt.Errorf("fetch Hadoop jars: %w", err)
		}
	}
	// The launcher is small and may change without the pom changing: write
	// it on every start rather than trusting the cached copy.
	javaFile := filepath.Join(dir, "MiniHdfs.java")
	if old, err := os.ReadFile(javaFile); err != nil || !bytes.Equal(old, launcher) {
		if err := os.WriteFile(javaFile, launcher, 0o644); err != nil {
			return "", fmt.Errorf("fetch Hadoop jars: write launcher: %w", err)
		}
	}
	return dir, nil
}

func mavenFetch(ctx context.Context, dir string) error {
	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return fmt.Errorf("fetch Hadoop jars: mvn (Maven) is needed to download them from Maven Central once: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("fetch Hadoop jars: clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("fetch Hadoop jars: %w", err)
	}
	pomFile := filepath.Join(dir, "pom.xml")
	if err := os.WriteFile(pomFile, pom, 0o644); err != nil {
		return fmt.Errorf("fetch Hadoop jars: %w", err)
	}
	cmd := exec.CommandContext(ctx, mvn, "-q", "-B", "-f", pomFile,
		"dependency:copy-dependencies", "-DoutputDirectory="+dir)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("fetch Hadoop jars: %s: %w\n%s", cmd, err, out.String())
	}
	return nil
}

// defaultJarRoot is <repo>/.cache/hdfs-jars (gitignored) when the working
// directory is inside the Shoal repository, as it is under go test, and the
// user's cache directory otherwise.
func defaultJarRoot() (string, error) {
	if root, err := checkout.FromWorkingDir(); err == nil {
		return filepath.Join(root, ".cache", "hdfs-jars"), nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", errors.New("fetch Hadoop jars: not inside the Shoal repository and no user cache directory; set SHOAL_HDFS_JARS")
	}
	return filepath.Join(cache, "shoal", "hdfs-jars"), nil
}
