package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"time"

	"offload/diagnose"
	"offload/hook"
	"offload/machines"
	"offload/sshexec"
)

// TestCmd is `offload test`: check every machine the way the hook will use it.
type TestCmd struct {
	File    string        `arg:"" optional:"" type:"path" help:"Machines file (default: $GUIX_CONFIGURATION_DIRECTORY/machines.scm)."`
	Regexp  string        `arg:"" optional:"" help:"Check only the machines whose name matches this regular expression."`
	Item    string        `help:"Local store item to send to each machine (default: a small .drv of the local store)."`
	Timeout time.Duration `default:"2m" help:"Time limit of each remote check."`
}

// checksFailedError is "some check failed": the lines already said which.
type checksFailedError struct{ failed int }

func (e *checksFailedError) Error() string {
	return fmt.Sprintf("%d check%s failed", e.failed, map[bool]string{true: "s", false: ""}[e.failed != 1])
}
func (e *checksFailedError) ExitCode() int { return 1 }

func (c *TestCmd) Run(ctx context.Context, g *Globals) error {
	conf, ms, err := loadFarm(c.File, c.Regexp)
	if err != nil {
		return err
	}
	ck := &diagnose.Checker{Conf: conf, Runner: farmRunner(conf.StateDir, g), Item: c.Item, Timeout: c.Timeout}
	failed, err := ck.Run(ctx, ms, os.Stdout)
	if err != nil {
		return err
	}
	if failed > 0 {
		return &checksFailedError{failed}
	}
	return nil
}

// loadFarm reads the machines file (file, or the hook's default), as the hook does
// (with guix repl when offload's evaluator cannot), and keeps the machines whose name
// matches re; parse warnings go to stderr.
func loadFarm(file, re string) (hook.Config, []*machines.Machine, error) {
	conf := hookConfig()
	if file != "" {
		conf.MachinesFile = file
	}
	var match *regexp.Regexp
	if re != "" {
		var err error
		if match, err = regexp.Compile(re); err != nil {
			return conf, nil, fmt.Errorf("bad machine name pattern %q: %w", re, err)
		}
	}
	loaded, err := machines.LoadWith(context.Background(), conf.MachinesFile, hook.GuixLoadOptions(conf, &sshexec.Runner{}))
	ms, warns := loaded.Machines, loaded.Warnings
	if errors.Is(err, fs.ErrNotExist) {
		return conf, nil, fmt.Errorf("no machines file %s: the hook offloads nothing", conf.MachinesFile)
	}
	if err != nil {
		return conf, nil, err
	}
	for _, w := range warns {
		complain("%s", w)
	}
	var out []*machines.Machine
	for _, m := range ms {
		if match == nil || match.MatchString(m.Name) {
			out = append(out, m)
		}
	}
	if len(out) == 0 && match != nil {
		return conf, nil, fmt.Errorf("no machine in %s matches %q", conf.MachinesFile, re)
	}
	return conf, out, nil
}

// farmRunner is the runner of `test` and `status`: without shared connections, every
// command connects afresh, so the host key and the login are checked now (not when
// some earlier master connected), and nothing is left running afterwards.
func farmRunner(stateDir string, g *Globals) *sshexec.Runner {
	r := newRunner(stateDir, g)
	r.ControlPersist = -1
	return r
}
