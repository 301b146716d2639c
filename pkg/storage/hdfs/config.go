package hdfs

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path"
	"strconv"
	"strings"
	"time"

	krb "github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/credentials"
	"github.com/jcmturner/gokrb5/v8/keytab"
)

// defaultPort is the namenode RPC port of Hadoop 3 distributions, used when
// the URL names a namenode without a port.
const defaultPort = "8020"

// Config says where and how the driver reaches HDFS. ParseURL builds one
// from a storage URL; DefaultConfig holds the defaults for every field.
type Config struct {
	// NameNodes are the namenodes' RPC addresses (host:port). With several,
	// the client fails over between them on StandbyException (HA pairs).
	NameNodes []string
	// User is the HDFS user the driver acts as when Kerberos is off.
	// Default: $HADOOP_USER_NAME, else the login user.
	User string
	// Root is the HDFS directory under which the driver keeps every path.
	// It is created if missing.
	Root string
	// Clients is the number of HDFS clients (each one namenode connection)
	// the driver spreads its calls over. A client sends one namenode call at
	// a time, so this bounds the driver's concurrent namenode calls. 8 keeps
	// an origin serving dozens of requests without piling them up behind one
	// connection, at the cost of one lease-renewal call per client per second.
	Clients int
	// DialTimeout bounds connecting to a namenode or a datanode. 10 s: long
	// enough for a loaded namenode's accept queue, short enough that an
	// unreachable namenode gives a prompt 503.
	DialTimeout time.Duration
	// IOTimeout bounds each read or write on a namenode or datanode
	// connection. Two minutes, because a namenode can take that long to
	// answer a large recursive delete; anything slower is treated as an outage.
	IOTimeout time.Duration
	// UseDatanodeHostname connects to datanodes by hostname instead of the IP
	// address they registered with (multi-homed clusters).
	UseDatanodeHostname bool
	// Kerberos, when not nil, authenticates to the namenodes with Kerberos.
	// Untested in Shoal's CI: it is passed through to the HDFS client as is.
	Kerberos *KerberosConfig
	// DataTransferProtection is dfs.data.transfer.protection
	// ("authentication", "integrity" or "privacy"), empty for none.
	DataTransferProtection string
}

// KerberosConfig holds what is needed to obtain Kerberos credentials. Either
// Keytab (with Principal) or CCache must be set.
type KerberosConfig struct {
	// Krb5Conf is the path of krb5.conf. Default /etc/krb5.conf.
	Krb5Conf string
	// Principal is "user@REALM", used with Keytab.
	Principal string
	// Keytab is the path of a keytab file holding Principal's key.
	Keytab string
	// CCache is the path of a credential cache (as left by kinit).
	CCache string
	// ServicePrincipal is the namenodes' principal without realm, as in
	// dfs.namenode.kerberos.principal, e.g. "nn/_HOST".
	ServicePrincipal string
}

// DefaultConfig returns a configuration with every default filled in and no
// namenode.
func DefaultConfig() Config {
	return Config{
		Root:        "/",
		Clients:     8,
		DialTimeout: 10 * time.Second,
		IOTimeout:   2 * time.Minute,
	}
}

// ParseURL reads a storage URL of the form
//
//	hdfs://nn1:8020,nn2:8020/root/path?user=shoal&clients=8
//
// Query parameters: user, clients, dial_timeout, io_timeout (Go durations),
// use_datanode_hostname (true/false), data_transfer_protection, and for
// Kerberos krb5_conf, kerberos_principal, kerberos_keytab, kerberos_ccache,
// kerberos_spn. Kerberos is on when kerberos_keytab or kerberos_ccache is set.
func ParseURL(u *url.URL) (Config, error) {
	cfg := DefaultConfig()
	if u.Scheme != "hdfs" {
		return cfg, fmt.Errorf("hdfs storage URL %q: scheme must be hdfs", u.Redacted())
	}
	if u.Host == "" {
		return cfg, fmt.Errorf("hdfs storage URL %q: no namenode address", u.Redacted())
	}
	for _, hp := range strings.Split(u.Host, ",") {
		if hp == "" {
			return cfg, fmt.Errorf("hdfs storage URL %q: empty namenode address", u.Redacted())
		}
		if _, _, err := net.SplitHostPort(hp); err != nil {
			hp = net.JoinHostPort(hp, defaultPort)
		}
		cfg.NameNodes = append(cfg.NameNodes, hp)
	}
	if u.Path != "" {
		cfg.Root = path.Clean("/" + u.Path)
	}
	if u.User != nil {
		return cfg, fmt.Errorf("hdfs storage URL %q: give the user as ?user=, not before the host", u.Redacted())
	}

	q := u.Query()
	var err error
	cfg.User = q.Get("user")
	if s := q.Get("clients"); s != "" {
		if cfg.Clients, err = strconv.Atoi(s); err != nil || cfg.Clients < 1 {
			return cfg, fmt.Errorf("hdfs storage URL: clients=%q: want a positive integer", s)
		}
	}
	for key, dst := range map[string]*time.Duration{"dial_timeout": &cfg.DialTimeout, "io_timeout": &cfg.IOTimeout} {
		if s := q.Get(key); s != "" {
			if *dst, err = time.ParseDuration(s); err != nil || *dst <= 0 {
				return cfg, fmt.Errorf("hdfs storage URL: %s=%q: want a positive duration such as 30s", key, s)
			}
		}
	}
	if s := q.Get("use_datanode_hostname"); s != "" {
		if cfg.UseDatanodeHostname, err = strconv.ParseBool(s); err != nil {
			return cfg, fmt.Errorf("hdfs storage URL: use_datanode_hostname=%q: want true or false", s)
		}
	}
	switch p := q.Get("data_transfer_protection"); p {
	case "", "authentication", "integrity", "privacy":
		cfg.DataTransferProtection = p
	default:
		return cfg, fmt.Errorf("hdfs storage URL: data_transfer_protection=%q: want authentication, integrity or privacy", p)
	}
	if q.Get("kerberos_keytab") != "" || q.Get("kerberos_ccache") != "" {
		cfg.Kerberos = &KerberosConfig{
			Krb5Conf:         q.Get("krb5_conf"),
			Principal:        q.Get("kerberos_principal"),
			Keytab:           q.Get("kerberos_keytab"),
			CCache:           q.Get("kerberos_ccache"),
			ServicePrincipal: q.Get("kerberos_spn"),
		}
	}
	return cfg, nil
}

// defaultUser is who Hadoop's own tools act as without Kerberos.
func defaultUser() (string, error) {
	if u := os.Getenv("HADOOP_USER_NAME"); u != "" {
		return u, nil
	}
	u, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("hdfs: no user given (?user=) and no login user: %w", err)
	}
	return u.Username, nil
}

// kerberosClient logs in with a keytab or loads a credential cache.
func (k *KerberosConfig) client() (*krb.Client, error) {
	confPath := k.Krb5Conf
	if confPath == "" {
		confPath = "/etc/krb5.conf"
	}
	conf, err := krbconfig.Load(confPath)
	if err != nil {
		return nil, fmt.Errorf("hdfs kerberos: load %s: %w", confPath, err)
	}
	if k.ServicePrincipal == "" {
		return nil, errors.New("hdfs kerberos: kerberos_spn (the namenode principal, e.g. nn/_HOST) is required")
	}
	if k.Keytab != "" {
		name, realm, ok := strings.Cut(k.Principal, "@")
		if !ok || name == "" || realm == "" {
			return nil, fmt.Errorf("hdfs kerberos: kerberos_principal %q: want user@REALM", k.Principal)
		}
		kt, err := keytab.Load(k.Keytab)
		if err != nil {
			return nil, fmt.Errorf("hdfs kerberos: load keytab %s: %w", k.Keytab, err)
		}
		c := krb.NewWithKeytab(name, realm, kt, conf)
		if err := c.Login(); err != nil {
			return nil, fmt.Errorf("hdfs kerberos: login as %s: %w", k.Principal, err)
		}
		return c, nil
	}
	cc, err := credentials.LoadCCache(k.CCache)
	if err != nil {
		return nil, fmt.Errorf("hdfs kerberos: load credential cache %s: %w", k.CCache, err)
	}
	c, err := krb.NewFromCCache(cc, conf)
	if err != nil {
		return nil, fmt.Errorf("hdfs kerberos: use credential cache %s: %w", k.CCache, err)
	}
	return c, nil
}
