package main

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"offload/machines"
	"offload/placement"
)

func TestPickMachines(t *testing.T) {
	ms := []*machines.Machine{{Name: "a", Port: 22}, {Name: "a", Port: 2222}, {Name: "b", Port: 22}, {Name: "a", Port: 22}}
	for name, want := range map[string][]string{
		"a":      {"a:22", "a:2222"},
		"a:2222": {"a:2222"},
		"b":      {"b:22"},
		"c":      nil,
		"a:23":   nil,
	} {
		if got := pickMachines(ms, name); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

func TestDrainUndrain(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := drain(&out, dir, []string{"a:22"}, "new disk", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, ok := placement.Drained(dir, "a:22"); !ok {
		t.Fatal("not drained")
	}
	if err := undrain(&out, dir, []string{"a:22", "b:22"}); err != nil {
		t.Fatal(err)
	}
	want := "drained 'a:22': no new builds go there; builds running there finish\n" +
		"undrained 'a:22': it takes new builds again\n'b:22' was not drained\n"
	if out.String() != want {
		t.Errorf("got %q\nwant %q", out.String(), want)
	}
	if _, ok := placement.Drained(dir, "a:22"); ok {
		t.Error("still drained")
	}
}
