package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"offload/diagnose"
	"offload/machines"
	"offload/sshexec"
)

// StatusCmd is `offload status`: the state of each build machine.
type StatusCmd struct {
	File    string        `arg:"" optional:"" type:"path" help:"Machines file (default: $GUIX_CONFIGURATION_DIRECTORY/machines.scm)."`
	Regexp  string        `arg:"" optional:"" help:"Show only the machines whose name matches this regular expression."`
	JSON    bool          `name:"json" help:"Print a JSON array, one object per machine (one line per refresh with --watch)."`
	Watch   int           `placeholder:"SECONDS" help:"Refresh every SECONDS seconds until interrupted."`
	Timeout time.Duration `default:"10s" help:"Time limit for each machine's answer."`
}

func (c *StatusCmd) Run(ctx context.Context, g *Globals) error {
	if c.Watch < 0 {
		return fmt.Errorf("--watch %d: the interval must be positive", c.Watch)
	}
	conf, ms, err := loadFarm(c.File, c.Regexp)
	if err != nil {
		return err
	}
	r := farmRunner(conf.StateDir, g)
	opt := diagnose.StatusOptions{StateDir: conf.StateDir, StoreDir: conf.StoreDir, Timeout: c.Timeout, Compression: conf.Compression}
	return c.loop(ctx, r, ms, opt, os.Stdout)
}

// loop shows the status once, or, with --watch, every Watch seconds until ctx ends
// (an interrupt is then the normal way out, not an error).
func (c *StatusCmd) loop(ctx context.Context, r *sshexec.Runner, ms []*machines.Machine, opt diagnose.StatusOptions, w io.Writer) error {
	for {
		start := time.Now()
		sts := diagnose.GatherStatus(ctx, r, ms, opt)
		if c.Watch > 0 && ctx.Err() != nil {
			return nil
		}
		var err error
		switch {
		case c.JSON:
			err = diagnose.WriteStatusJSON(w, sts, c.Watch > 0)
		case c.Watch > 0:
			fmt.Fprintf(w, "%s (every %ds; interrupt to stop)\n", start.Format("2006-01-02 15:04:05"), c.Watch)
			err = diagnose.WriteStatusTable(w, sts)
			if err == nil {
				_, err = fmt.Fprintln(w)
			}
		default:
			err = diagnose.WriteStatusTable(w, sts)
		}
		if err != nil || c.Watch == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(start.Add(time.Duration(c.Watch) * time.Second))):
		}
	}
}
