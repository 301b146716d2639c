package gc

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func dg(name string) digest.Digest { return digest.FromString(name) }

func daysAgo(n int) time.Time { return now.Add(-time.Duration(n) * 24 * time.Hour) }

// repoOf builds a repository whose tags each point at their own manifest
// named after the tag, pushed the given number of days ago.
func repoOf(name string, tagAges map[string]int) RepoSnapshot {
	r := RepoSnapshot{Name: name}
	for tag, age := range tagAges {
		r.Tags = append(r.Tags, TagInfo{Name: tag, Digest: dg(name + ":" + tag), PushedAt: daysAgo(age)})
		r.Manifests = append(r.Manifests, ManifestInfo{Digest: dg(name + ":" + tag), PushedAt: daysAgo(age)})
	}
	return r
}

func deletedTags(p Plan) []string {
	var out []string
	for _, t := range p.Tags {
		out = append(out, t.Repo+":"+t.Tag)
	}
	slices.Sort(out)
	return out
}

func TestPlanRetentionDeletesExactlyTheExpectedTags(t *testing.T) {
	snapshot := Snapshot{Repos: []RepoSnapshot{
		repoOf("ci/app", map[string]int{"b1": 1, "b2": 2, "b3": 3, "b4": 40, "b5": 50, "release-1.0": 400, "latest": 60}),
		repoOf("ci/tool", map[string]int{"t1": 10, "t2": 20, "t3": 30}),
		repoOf("prod/web", map[string]int{"v1": 1000}),
		repoOf("team/a/b", map[string]int{"old": 100, "new": 1}),
	}}
	tests := []struct {
		name  string
		rules []Rule
		want  []string
	}{
		{"no rules keep everything", nil, nil},
		{
			"keepLast only",
			[]Rule{{Repositories: "ci/*", KeepLast: 2}},
			[]string{"ci/app:b3", "ci/app:b4", "ci/app:b5", "ci/app:latest", "ci/app:release-1.0", "ci/tool:t3"},
		},
		{
			"maxAge only",
			[]Rule{{Repositories: "ci/*", MaxAge: Duration(30 * 24 * time.Hour)}},
			[]string{"ci/app:b4", "ci/app:b5", "ci/app:latest", "ci/app:release-1.0"},
		},
		{
			"keepLast protects newest from maxAge and keepTags are not counted",
			[]Rule{{Repositories: "ci/app", KeepLast: 4, MaxAge: Duration(30 * 24 * time.Hour), KeepTags: []string{"latest", "release-.*"}}},
			[]string{"ci/app:b5"},
		},
		{
			"first matching rule wins",
			[]Rule{
				{Repositories: "ci/tool", KeepLast: 10},
				{Repositories: "ci/*", KeepLast: 1},
			},
			[]string{"ci/app:b2", "ci/app:b3", "ci/app:b4", "ci/app:b5", "ci/app:latest", "ci/app:release-1.0"},
		},
		{
			"double star crosses components, single star does not",
			[]Rule{{Repositories: "team/*", KeepLast: 1}, {Repositories: "team/**", MaxAge: Duration(50 * 24 * time.Hour)}},
			[]string{"team/a/b:old"},
		},
		{
			"keepTags anchored: release-1.0 kept, latest not",
			[]Rule{{Repositories: "**", MaxAge: Duration(45 * 24 * time.Hour), KeepTags: []string{"release"}}},
			[]string{"ci/app:b5", "ci/app:latest", "ci/app:release-1.0", "prod/web:v1", "team/a/b:old"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := PlanRetention(snapshot, tt.rules, now)
			if err != nil {
				t.Fatal(err)
			}
			if got := deletedTags(p); !slices.Equal(got, tt.want) {
				t.Errorf("deleted tags:\n got %v\nwant %v", got, tt.want)
			}
			// Every manifest whose only tag went must go too, and no other.
			var wantManifests, gotManifests []string
			for _, tag := range tt.want {
				wantManifests = append(wantManifests, dg(tag).String())
			}
			for _, m := range p.Manifests {
				gotManifests = append(gotManifests, m.Digest.String())
			}
			slices.Sort(wantManifests)
			slices.Sort(gotManifests)
			if !slices.Equal(gotManifests, wantManifests) {
				t.Errorf("deleted manifests: got %v, want those of the deleted tags %v", gotManifests, wantManifests)
			}
		})
	}
}

func TestPlanRetentionManifestGraph(t *testing.T) {
	idx, childA, childB := dg("index"), dg("child-a"), dg("child-b")
	sig := dg("signature")
	sigOfSig := dg("sig-of-sig")
	orphanOld, orphanNew := dg("orphan-old"), dg("orphan-new")
	shared := dg("shared")
	oldIdx := dg("old-index")
	repo := RepoSnapshot{
		Name: "r",
		Tags: []TagInfo{
			{Name: "keep", Digest: idx, PushedAt: daysAgo(1)},
			{Name: "gone", Digest: oldIdx, PushedAt: daysAgo(100)},
			{Name: "gone-too", Digest: shared, PushedAt: daysAgo(100)},
		},
		Manifests: []ManifestInfo{
			{Digest: idx, PushedAt: daysAgo(1), Refs: ManifestRefs{Children: []digest.Digest{childA, childB}}},
			{Digest: childA, PushedAt: daysAgo(300)},
			{Digest: childB, PushedAt: daysAgo(300)},
			{Digest: sig, PushedAt: daysAgo(300), Refs: ManifestRefs{Subject: childA}},
			{Digest: sigOfSig, PushedAt: daysAgo(300), Refs: ManifestRefs{Subject: sig}},
			{Digest: orphanOld, PushedAt: daysAgo(30)},
			{Digest: orphanNew, PushedAt: daysAgo(2)},
			// The old index goes, but its child is shared with the kept index.
			{Digest: oldIdx, PushedAt: daysAgo(100), Refs: ManifestRefs{Children: []digest.Digest{childB, shared}}},
			{Digest: shared, PushedAt: daysAgo(100)},
		},
	}
	name := map[digest.Digest]string{idx: "index", childA: "child-a", childB: "child-b", sig: "signature", sigOfSig: "sig-of-sig",
		orphanOld: "orphan-old", orphanNew: "orphan-new", shared: "shared", oldIdx: "old-index"}
	tests := []struct {
		name string
		rule Rule
		want []string
	}{
		{"untagged kept without untaggedMaxAge", Rule{Repositories: "r", MaxAge: Duration(50 * 24 * time.Hour)}, []string{"old-index", "shared"}},
		{"untagged older than untaggedMaxAge go, referrers and children of kept stay", Rule{Repositories: "r", MaxAge: Duration(50 * 24 * time.Hour), UntaggedMaxAge: Duration(7 * 24 * time.Hour)}, []string{"old-index", "orphan-old", "shared"}},
		{"everything reachable stays", Rule{Repositories: "r", KeepLast: 5, UntaggedMaxAge: Duration(7 * 24 * time.Hour)}, []string{"orphan-old"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := PlanRetention(Snapshot{Repos: []RepoSnapshot{repo}}, []Rule{tt.rule}, now)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range p.Manifests {
				got = append(got, name[m.Digest])
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("deleted manifests: got %v, want %v (plan %+v)", got, tt.want, p.Manifests)
			}
		})
	}
}

func TestPlanRetentionSubjectDeletedTakesReferrers(t *testing.T) {
	img, sig := dg("img"), dg("sig")
	repo := RepoSnapshot{
		Name: "r",
		Tags: []TagInfo{{Name: "old", Digest: img, PushedAt: daysAgo(100)}},
		Manifests: []ManifestInfo{
			{Digest: img, PushedAt: daysAgo(100)},
			{Digest: sig, PushedAt: daysAgo(1), Refs: ManifestRefs{Subject: img}},
		},
	}
	p, err := PlanRetention(Snapshot{Repos: []RepoSnapshot{repo}}, []Rule{{Repositories: "r", MaxAge: Duration(24 * time.Hour)}}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Manifests) != 2 {
		t.Fatalf("want the image and its referrer deleted, got %+v", p.Manifests)
	}
}

func TestPlanRetentionRejectsBadRule(t *testing.T) {
	_, err := PlanRetention(Snapshot{}, []Rule{{Repositories: "r", KeepTags: []string{"("}}}, now)
	if err == nil || !strings.Contains(err.Error(), "keepTags") {
		t.Fatalf("want a keepTags error, got %v", err)
	}
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`
interval: 6h
grace: 2h
dryRun: true
rules:
  - repositories: "ci/**"
    keepLast: 10
    maxAge: 30d
    keepTags: ["latest", "v[0-9]+\\..*"]
    untaggedMaxAge: 1w
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Rules[0]
	if c.Interval != Duration(6*time.Hour) || c.Grace != Duration(2*time.Hour) || !c.DryRun ||
		r.KeepLast != 10 || r.MaxAge != Duration(30*24*time.Hour) || r.UntaggedMaxAge != Duration(7*24*time.Hour) {
		t.Errorf("unexpected config %+v", c)
	}
	if c.UploadMaxAge != DefaultConfig().UploadMaxAge {
		t.Errorf("default uploadMaxAge not kept: %s", c.UploadMaxAge)
	}
	if !r.keepsTag("v1.2") || r.keepsTag("xv1.2") {
		t.Errorf("keepTags not compiled as anchored regexps")
	}
	for _, bad := range []string{"grace: 1s", "rules: [{repositories: ''}]", "rules: [{repositories: 'a', keepLast: -1}]", "leaseTTL: 1s", "interval: nonsense"} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("config %q: want an error", bad)
		}
	}
	if err := func() error { c := DefaultConfig(); return c.Validate() }(); err != nil {
		t.Errorf("default config invalid: %v", err)
	}
}

func TestDurationJSONRoundTrip(t *testing.T) {
	in := map[Phase]Duration{PhaseMark: Duration(1500 * time.Millisecond)}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"mark":"1.5s"}` {
		t.Errorf("marshalled %s", b)
	}
	var out map[Phase]Duration
	if err := json.Unmarshal(b, &out); err != nil || out[PhaseMark] != in[PhaseMark] {
		t.Errorf("round trip: %v, %v", out, err)
	}
}
