package k8s

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// docsPage is where the install commands a user copies are; every
// `helm install`, `helm upgrade --install` and `helm template` command in
// its code blocks is rendered and applied, so the docs cannot show a
// combination that does not work.
const docsPage = "docs/kubernetes.md"

// docCombinations reads the helm commands of docsPage.
func docCombinations(t testing.TB, root string) []helmRender {
	t.Helper()
	cmds := helmCommands(readFile(t, root, docsPage))
	if len(cmds) == 0 {
		t.Fatalf("%s shows no helm install command: the tests have nothing to render", docsPage)
	}
	var out []helmRender
	for _, c := range cmds {
		h, err := parseHelmCommand(c.text)
		if err != nil {
			t.Fatalf("%s:%d: %v", docsPage, c.line, err)
		}
		h.Name = fmt.Sprintf("%s:%d", docsPage, c.line)
		out = append(out, h)
	}
	return out
}

type docCommand struct {
	line int
	text string
}

// helmCommands returns the helm commands in the markdown's fenced code
// blocks, continuation lines joined.
func helmCommands(md []byte) []docCommand {
	var out []docCommand
	inCode := false
	var cur *docCommand
	sc := bufio.NewScanner(bytes.NewReader(md))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			inCode = !inCode
			continue
		}
		if !inCode {
			continue
		}
		if cur != nil {
			cur.text += " " + strings.TrimSuffix(trimmed, `\`)
			if !strings.HasSuffix(trimmed, `\`) {
				out = append(out, *cur)
				cur = nil
			}
			continue
		}
		if isHelmRender(trimmed) {
			cur = &docCommand{line: n, text: strings.TrimSuffix(trimmed, `\`)}
			if !strings.HasSuffix(trimmed, `\`) {
				out = append(out, *cur)
				cur = nil
			}
		}
	}
	return out
}

func isHelmRender(s string) bool {
	return strings.HasPrefix(s, "helm install ") || strings.HasPrefix(s, "helm template ") ||
		strings.HasPrefix(s, "helm upgrade --install ")
}

// parseHelmCommand understands the flags the docs use; any other flag is
// an error, so that the test never renders something else than the docs
// say.
func parseHelmCommand(cmd string) (helmRender, error) {
	words, err := shellWords(cmd)
	if err != nil {
		return helmRender{}, err
	}
	h := helmRender{Namespace: "default"}
	var positional []string
	for i := 2; i < len(words); i++ {
		w := words[i]
		flag, val, hasVal := strings.Cut(w, "=")
		next := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(words) {
				return "", fmt.Errorf("%q: %s needs a value", cmd, flag)
			}
			i++
			return words[i], nil
		}
		var err error
		var v string
		switch flag {
		case "-f", "--values":
			v, err = next()
			h.Values.ValueFiles = append(h.Values.ValueFiles, v)
		case "--set":
			v, err = next()
			h.Values.Values = append(h.Values.Values, v)
		case "--set-string":
			v, err = next()
			h.Values.StringValues = append(h.Values.StringValues, v)
		case "--set-json":
			v, err = next()
			h.Values.JSONValues = append(h.Values.JSONValues, v)
		case "-n", "--namespace":
			h.Namespace, err = next()
		case "--install", "--create-namespace", "--wait", "--atomic":
			// No effect on what is rendered.
		default:
			if strings.HasPrefix(w, "-") {
				return helmRender{}, fmt.Errorf("%q: flag %s is not understood by the test that renders the docs' commands (e2e/k8s/docs_test.go)", cmd, w)
			}
			positional = append(positional, w)
		}
		if err != nil {
			return helmRender{}, err
		}
	}
	if len(positional) != 2 {
		return helmRender{}, fmt.Errorf("%q: want a release name and the chart, got %q", cmd, positional)
	}
	if positional[1] != chartDir && positional[1] != "./"+chartDir {
		return helmRender{}, fmt.Errorf("%q: the chart is %s", cmd, chartDir)
	}
	h.Release = positional[0]
	return h, nil
}

// shellWords splits a command line as sh does for the quoting the docs
// use: single and double quotes, and backslash escapes outside quotes.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case r == '#' && !inWord:
			// A comment ends the command.
			return words, nil
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("%q: unterminated quote", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

func TestShellWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`helm install a b`, []string{"helm", "install", "a", "b"}},
		{`--set 'x={a,b}' --set "y=c d"`, []string{"--set", "x={a,b}", "--set", "y=c d"}},
		{`a\ b c  # comment`, []string{"a b", "c"}},
	} {
		got, err := shellWords(tc.in)
		if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("shellWords(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
