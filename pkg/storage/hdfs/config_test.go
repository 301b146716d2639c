package hdfs

import (
	"net/url"
	"reflect"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want func(*Config)
		bad  bool
	}{
		{url: "hdfs://nn1:8020,nn2:9000/shoal?user=shoal", want: func(c *Config) {
			c.NameNodes = []string{"nn1:8020", "nn2:9000"}
			c.Root = "/shoal"
			c.User = "shoal"
		}},
		{url: "hdfs://nn1/", want: func(c *Config) { c.NameNodes = []string{"nn1:8020"} }},
		{url: "hdfs://nn1", want: func(c *Config) { c.NameNodes = []string{"nn1:8020"} }},
		{url: "hdfs://127.0.0.1:9000/a/b/../c/?clients=3&dial_timeout=2s&io_timeout=1m&use_datanode_hostname=true", want: func(c *Config) {
			c.NameNodes = []string{"127.0.0.1:9000"}
			c.Root = "/a/c"
			c.Clients = 3
			c.DialTimeout = 2 * time.Second
			c.IOTimeout = time.Minute
			c.UseDatanodeHostname = true
		}},
		{url: "hdfs://nn:8020/x?kerberos_keytab=/k.keytab&kerberos_principal=shoal@EXAMPLE.COM&kerberos_spn=nn/_HOST&data_transfer_protection=privacy", want: func(c *Config) {
			c.NameNodes = []string{"nn:8020"}
			c.Root = "/x"
			c.DataTransferProtection = "privacy"
			c.Kerberos = &KerberosConfig{Principal: "shoal@EXAMPLE.COM", Keytab: "/k.keytab", ServicePrincipal: "nn/_HOST"}
		}},
		{url: "file:///x", bad: true},
		{url: "hdfs:///x", bad: true},
		{url: "hdfs://nn1,,nn2/x", bad: true},
		{url: "hdfs://shoal@nn1/x", bad: true},
		{url: "hdfs://nn1/x?clients=0", bad: true},
		{url: "hdfs://nn1/x?dial_timeout=soon", bad: true},
		{url: "hdfs://nn1/x?data_transfer_protection=maybe", bad: true},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseURL(u)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseURL(%s) = %+v, want an error", tc.url, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseURL(%s): %v", tc.url, err)
			continue
		}
		want := DefaultConfig()
		tc.want(&want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ParseURL(%s)\n got %+v\nwant %+v", tc.url, got, want)
		}
	}
}
