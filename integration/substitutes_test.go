package integration

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"offload/integration/drv"
	"offload/integration/farm"
	"offload/storeio"
)

// noLocalDaemon sends the hook's local exports through the local guix (whose log says
// what was exported), as on a host whose daemon socket it cannot reach.
const noLocalDaemon = "GUIX_DAEMON_SOCKET=/nonexistent/daemon-socket"

// TestSubstitutesOnMachine: with OFFLOAD_SUBSTITUTES naming the machine (NAME:PORT),
// the machine fetches the inputs it has substitutes for, and only the rest is uploaded:
// the inputs without a substitute, the .drv, and the one whose substitute fails to
// download (truncated), so the build still runs with its exact inputs. The note says
// what was substituted. Without the variable, everything is uploaded as before and the
// machine is never asked to substitute. On each path (OFFLOAD_PATH): on the shell path
// the machine's `guix build --keep-going` fetches (and the note gives the local nar
// sizes); on the daemon path its daemon's BuildPaths does (substituteOnDaemon), whose
// failure for the truncated substitute the hook notes and gets past, and the .drv goes
// up by AddTextToStore rather than in the exported bundle.

func TestSubstitutesOnMachine(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 4})
	subA := f.AddLocalItem("sub-a", map[string]string{"data": strings.Repeat("a", 50_000)})
	subB := f.AddLocalItem("sub-b", map[string]string{"data": strings.Repeat("b", 30_000)})
	broken := f.AddLocalItem("sub-broken", map[string]string{"data": strings.Repeat("c", 20_000)})
	plain1 := f.AddLocalItem("plain-1", map[string]string{"data": "plain one\n"})
	plain2 := f.AddLocalItem("plain-2", map[string]string{"data": "plain two\n"})
	inputs := []string{subA, subB, broken, plain1, plain2}
	mkDrv := func(nonce string) *drv.Derivation {
		return f.MakeDrv(drv.Spec{
			Name:      "t-subst",
			Args:      []string{"-c", `for i in $IN; do /bin/cat "$FAKEGUIX_STORE/${i##*/}/data"; done > "$out"`},
			Env:       map[string]string{"IN": strings.Join(inputs, " ")},
			InputSrcs: inputs,
			Nonce:     nonce,
		})
	}
	var want strings.Builder
	for _, p := range inputs {
		b, err := os.ReadFile(p + "/data")
		if err != nil {
			t.Fatal(err)
		}
		want.Write(b)
	}
	for _, m := range f.Machines {
		if err := f.AddSubstitutes(m, subA, subB, broken); err != nil {
			t.Fatal(err)
		}
		if err := m.BreakSubstitute(broken); err != nil {
			t.Fatal(err)
		}
	}
	exported := func(before int) []string {
		var got []string
		for _, l := range f.LocalInvocations()[before:] {
			if rest, ok := strings.CutPrefix(l, "guix archive --export "); ok {
				got = append(got, strings.Fields(rest)...)
			}
		}
		slices.Sort(got)
		return got
	}
	check := func(t *testing.T, m *farm.Machine, d *drv.Derivation, r result) {
		t.Helper()
		if r.answer != "accept" || r.status != 0 {
			t.Fatalf("answer %s, status %d:\n%s\nlog:\n%s", r.answer, r.status, r.messages, r.log)
		}
		out := d.OutputPaths()[0]
		local, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		real, _ := m.Store.Drv().Real(out)
		remote, err := os.ReadFile(real)
		if err != nil || string(local) != string(remote) || string(local) != want.String() {
			t.Errorf("output %s: local %d bytes, machine's %d bytes (%v), want the %d bytes of the inputs", out, len(local), len(remote), err, want.Len())
		}
	}
	var size int64
	for _, p := range []string{subA, subB} {
		n, err := storeio.NarSize(p)
		if err != nil {
			t.Fatal(err)
		}
		size += n
	}

	for i, path := range []string{"shell", "daemon"} {
		shell := path == "shell"
		t.Run(path+"/opted-in", func(t *testing.T) {
			m := f.Machines[2*i]
			name := fmt.Sprintf("%s:%d", m.Name, m.Port)
			writeMachinesText(t, f, []string{machineEntry(m, 0, 1, "")})
			d := mkDrv("subst-on-" + path)
			before := len(f.LocalInvocations())
			r := offload(t, f, d, buildOpts{env: []string{"OFFLOAD_PATH=" + path, "OFFLOAD_SUBSTITUTES=elsewhere, " + name, noLocalDaemon}})
			check(t, m, d, r)
			wantUp := []string{broken, plain1, plain2}
			if shell {
				wantUp = append(wantUp, d.Path)
			}
			if got, want := exported(before), sortedCopy(wantUp...); !slices.Equal(got, want) {
				t.Errorf("uploaded %q, want only %q", got, want)
			}
			for _, p := range append([]string{d.Path}, inputs...) {
				if !m.Store.Drv().Valid(p) {
					t.Errorf("%s is not in the machine's store", p)
				}
			}
			if shell {
				inv := m.Invocations()
				fetch := lineWith(strings.Join(inv, "\n"), "guix build --keep-going ")
				for _, p := range inputs {
					if !strings.Contains(fetch, p) {
						t.Errorf("the machine was not asked to substitute %s: fetch %q", p, fetch)
					}
				}
				if strings.Contains(fetch, d.Path) {
					t.Errorf("the machine was asked to substitute the derivation being built: %q", fetch)
				}
				note := regexp.MustCompile(`offload: machine '` + regexp.QuoteMeta(name) +
					`' substituted 2 of 5 missing inputs \(` + regexp.QuoteMeta(fmt.Sprintf("%.1f MiB", float64(size)/(1<<20))) +
					`\); sending 4 store items \([0-9.]+ MiB\) \([a-z]+\)\.\.\.`)
				if !note.MatchString(r.messages) {
					t.Errorf("no note matching %s:\n%s", note, r.messages)
				}
				return
			}
			// The daemon's BuildPaths of the five inputs failed for the truncated one
			// only (keepGoing: the others were tried); the hook says so and sends the rest.
			for _, want := range []string{
				"offload: machine '" + name + "' could not fetch every substitute: build of `" + broken + "' failed",
				"offload: machine '" + name + "' substituted 2 of 5 missing inputs (" + fmt.Sprintf("%.1f MiB", float64(size)/(1<<20)) + ")",
				"offload: sending 3 store items (",
			} {
				if !strings.Contains(r.messages, want) {
					t.Errorf("no note %q:\n%s", want, r.messages)
				}
			}
		})

		t.Run(path+"/not-opted-in", func(t *testing.T) {
			m := f.Machines[2*i+1]
			name := fmt.Sprintf("%s:%d", m.Name, m.Port)
			writeMachinesText(t, f, []string{machineEntry(m, 0, 1, "")})
			d := mkDrv("subst-off-" + path)
			before := len(f.LocalInvocations())
			r := offload(t, f, d, buildOpts{env: []string{"OFFLOAD_PATH=" + path, noLocalDaemon}})
			check(t, m, d, r)
			wantUp := slices.Clone(inputs)
			if shell {
				wantUp = append(wantUp, d.Path)
			}
			if got, want := exported(before), sortedCopy(wantUp...); !slices.Equal(got, want) {
				t.Errorf("uploaded %q, want everything, %q", got, want)
			}
			if contains(m.Invocations(), "--keep-going") {
				t.Errorf("the machine was asked to substitute: %q", m.Invocations())
			}
			sending := fmt.Sprintf("offload: sending 6 store items to '%s' (", name)
			if !shell {
				sending = "offload: sending 5 store items ("
			}
			if strings.Contains(r.messages, "substitut") || !strings.Contains(r.messages, sending) {
				t.Errorf("the note changed:\n%s", r.messages)
			}
		})
	}
}

func sortedCopy(ps ...string) []string { return slices.Sorted(slices.Values(ps)) }
