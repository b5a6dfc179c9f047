package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"offload/hook"
	"offload/machines"
	"offload/placement"
	"offload/sshexec"
)

// DrainCmd is `offload drain NAME`: no new build goes to the machine; builds running
// there finish.
type DrainCmd struct {
	Name   string `arg:"" help:"The machine: its name (every record of it) or NAME:PORT."`
	Reason string `help:"Why, shown by the hook and by status."`
	File   string `name:"file" short:"f" type:"path" help:"Machines file (default: as the hook reads it)."`
}

// UndrainCmd is `offload undrain NAME`: the machine takes new builds again.
type UndrainCmd struct {
	Name string `arg:"" help:"The machine: its name (every record of it) or NAME:PORT."`
	File string `name:"file" short:"f" type:"path" help:"Machines file (default: as the hook reads it)."`
}

func (c *DrainCmd) Run(ctx context.Context) error {
	conf, ids, err := drainTargets(ctx, c.File, c.Name)
	if err != nil {
		return err
	}
	return drain(os.Stdout, conf.StateDir, ids, c.Reason, time.Now())
}

func (c *UndrainCmd) Run(ctx context.Context) error {
	conf, ids, err := drainTargets(ctx, c.File, c.Name)
	if err != nil {
		return err
	}
	return undrain(os.Stdout, conf.StateDir, ids)
}

func drain(w io.Writer, stateDir string, ids []string, why string, now time.Time) error {
	for _, id := range ids {
		if err := placement.Drain(stateDir, id, why, now); err != nil {
			return fmt.Errorf("machine '%s': %w", id, err)
		}
		fmt.Fprintf(w, "drained '%s': no new builds go there; builds running there finish\n", id)
	}
	return nil
}

func undrain(w io.Writer, stateDir string, ids []string) error {
	for _, id := range ids {
		was, err := placement.Undrain(stateDir, id)
		if err != nil {
			return fmt.Errorf("machine '%s': %w", id, err)
		}
		if was {
			fmt.Fprintf(w, "undrained '%s': it takes new builds again\n", id)
		} else {
			fmt.Fprintf(w, "'%s' was not drained\n", id)
		}
	}
	return nil
}

// drainTargets reads the machines file (file, or the hook's) and returns the NAME:PORT
// of each machine that name designates: a NAME:PORT, or a name (every port).
func drainTargets(ctx context.Context, file, name string) (hook.Config, []string, error) {
	conf := hookConfig()
	if file != "" {
		conf.MachinesFile = file
	}
	loaded, err := machines.LoadWith(ctx, conf.MachinesFile, hook.GuixLoadOptions(conf, &sshexec.Runner{}))
	if errors.Is(err, fs.ErrNotExist) {
		return conf, nil, fmt.Errorf("no machines file %s: the hook offloads nothing", conf.MachinesFile)
	}
	if err != nil {
		return conf, nil, err
	}
	ids := pickMachines(loaded.Machines, name)
	if len(ids) == 0 {
		return conf, nil, fmt.Errorf("no machine %q in %s", name, conf.MachinesFile)
	}
	return conf, ids, nil
}

// pickMachines returns the IDs of the machines that name designates, each once.
func pickMachines(ms []*machines.Machine, name string) []string {
	var ids []string
	for _, m := range machines.Unique(ms) {
		if m.ID() == name || m.Name == name {
			ids = append(ids, m.ID())
		}
	}
	return ids
}
