package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/pkg/auth"
)

const certsUsage = `usage: shoalctl certs init --dir DIR [--name NAME] [--key ecdsa-p256|ed25519] [--days N] [--force]
       shoalctl certs issue --dir DIR --role origin|agent|tracker --id ID [--ip IP...] [--dns NAME...]
                            [--days N] [--key ecdsa-p256|ed25519] [--out DIR] [--force]

init writes a cluster CA to DIR/ca.pem and DIR/ca-key.pem. issue signs a certificate for one origin
node, agent or tracker with it, in the cluster profile (shoal://<role>/<id>, see docs/certificates.md),
and writes OUT/<id>.pem and OUT/<id>-key.pem (OUT defaults to DIR). --ip and --dns repeat or take
comma-separated lists: the addresses the holder is reached at and announces.
`

// Validity defaults: the CA outlives many rounds of host certificates, and
// host certificates are short enough that rotation is routine.
const (
	defaultCADays   = 3650
	defaultCertDays = 365
	// backdate covers clocks a little behind the issuer's.
	backdate = 5 * time.Minute
)

// runCerts runs `shoalctl certs ...`; args follow "certs".
func runCerts(args []string, out io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(out, certsUsage)
		return errors.New("certs: init or issue?")
	}
	switch args[0] {
	case "init":
		return certsInit(args[1:], out)
	case "issue":
		return certsIssue(args[1:], out)
	}
	fmt.Fprint(out, certsUsage)
	return fmt.Errorf("certs: unknown command %q", args[0])
}

func certsInit(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("certs init", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), certsUsage) }
	dir := fs.String("dir", "", "directory for ca.pem and ca-key.pem (created if missing)")
	name := fs.String("name", "Shoal cluster CA", "the CA's common name")
	keyType := fs.String("key", "ecdsa-p256", "key algorithm: ecdsa-p256 or ed25519")
	days := fs.Int("days", defaultCADays, "validity in days")
	force := fs.Bool("force", false, "overwrite an existing CA (every certificate it signed stops being trusted)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("certs init: --dir is required")
	}
	if *days < 1 {
		return fmt.Errorf("certs init: --days must be at least 1, got %d", *days)
	}
	certPath, keyPath := filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem")
	if err := checkAbsent(*force, certPath, keyPath); err != nil {
		return err
	}
	key, err := generateKey(*keyType)
	if err != nil {
		return err
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: *name},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.AddDate(0, 0, *days),
		IsCA:         true,
		// The CA signs host certificates only, never another CA.
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("certs init: creating the CA certificate: %w", err)
	}
	if err := writePair(*dir, certPath, keyPath, der, key); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s and %s (%s, valid until %s)\n", certPath, keyPath, *keyType, tmpl.NotAfter.UTC().Format(time.DateOnly))
	fmt.Fprintln(out, "keep ca-key.pem offline; hosts need only ca.pem")
	return nil
}

func certsIssue(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("certs issue", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), certsUsage) }
	dir := fs.String("dir", "", "directory holding ca.pem and ca-key.pem")
	outDir := fs.String("out", "", "directory for <id>.pem and <id>-key.pem (default --dir)")
	roleName := fs.String("role", "", "origin, agent or tracker")
	id := fs.String("id", "", "peer id: the id the holder announces (letters, digits, '-', '.', '_', '~')")
	var ips, dnsNames listFlag
	fs.Var(&ips, "ip", "IP address the holder is reached at (repeatable, or comma-separated)")
	fs.Var(&dnsNames, "dns", "DNS name the holder is reached at (repeatable, or comma-separated)")
	keyType := fs.String("key", "ecdsa-p256", "key algorithm: ecdsa-p256 or ed25519")
	days := fs.Int("days", defaultCertDays, "validity in days (capped at the CA's)")
	force := fs.Bool("force", false, "overwrite an existing certificate and key for this id")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("certs issue: --dir is required")
	}
	if *outDir == "" {
		*outDir = *dir
	}
	if *days < 1 {
		return fmt.Errorf("certs issue: --days must be at least 1, got %d", *days)
	}
	role, err := auth.ParseRole(*roleName)
	if err != nil {
		return fmt.Errorf("certs issue: --role: %w", err)
	}
	ident := auth.Identity{Role: role, ID: *id, DNSNames: dnsNames}
	if err := auth.ValidatePeerID(*id); err != nil {
		return fmt.Errorf("certs issue: --id: %w", err)
	}
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("certs issue: --ip %q: %w", s, err)
		}
		ident.IPs = append(ident.IPs, ip)
	}
	ca, caKey, err := loadCA(*dir)
	if err != nil {
		return err
	}
	now := time.Now()
	notAfter := now.AddDate(0, 0, *days)
	if notAfter.After(ca.NotAfter) {
		// A certificate valid past its CA would fail verification then
		// anyway; say so rather than write a misleading date.
		notAfter = ca.NotAfter
		fmt.Fprintf(out, "note: validity capped at the CA's expiry, %s\n", notAfter.UTC().Format(time.DateOnly))
	}
	tmpl, err := auth.PeerTemplate(ident, now.Add(-backdate), notAfter)
	if err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	certPath, keyPath := filepath.Join(*outDir, *id+".pem"), filepath.Join(*outDir, *id+"-key.pem")
	if err := checkAbsent(*force, certPath, keyPath); err != nil {
		return err
	}
	key, err := generateKey(*keyType)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return fmt.Errorf("certs issue: signing: %w", err)
	}
	if err := writePair(*outDir, certPath, keyPath, der, key); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s and %s: %s", certPath, keyPath, ident)
	if len(ips)+len(dnsNames) > 0 {
		fmt.Fprintf(out, " at %s", strings.Join(append(append([]string{}, ips...), dnsNames...), ", "))
	}
	fmt.Fprintf(out, ", valid until %s\n", notAfter.UTC().Format(time.DateOnly))
	return nil
}

// parseFlags parses args, refusing leftovers: a misplaced value would
// otherwise be silently ignored.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s: unexpected arguments %q", fs.Name(), fs.Args())}
	}
	return nil
}

// listFlag collects a repeated flag, each value possibly a comma-separated
// list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func generateKey(alg string) (crypto.Signer, error) {
	switch alg {
	case "ecdsa-p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("unknown key algorithm %q: want ecdsa-p256 or ed25519", alg)
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	return n, nil
}

// loadCA reads dir/ca.pem and dir/ca-key.pem. Any key form OpenSSL writes
// for ECDSA, Ed25519 or RSA works, so a CA made with openssl can issue too.
func loadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA certificate (make one with `shoalctl certs init --dir %s`): %w", dir, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("loading the CA from %s and %s: %w", certPath, keyPath, err)
	}
	ca, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s: %w", certPath, err)
	}
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA certificate", certPath)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: %T cannot sign", keyPath, pair.PrivateKey)
	}
	return ca, signer, nil
}

func checkAbsent(force bool, paths ...string) error {
	if force {
		return nil
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s exists: not overwriting it without --force", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// writePair writes the certificate (mode 0644) and its key (PKCS #8, mode
// 0600), creating dir.
func writePair(dir, certPath, keyPath string, der []byte, key crypto.Signer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding the key: %w", err)
	}
	// The key first, so that a certificate on disk always has its key.
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFile replaces path with b through a temporary file, so that a
// reader (a restarting host, or a --force over a live file) never sees half
// a PEM, and a key never exists with wider permissions than mode.
func writeFile(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
