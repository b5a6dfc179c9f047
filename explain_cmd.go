package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"offload/diagnose"
	"offload/hook"
	"offload/machines"
)

// ExplainCmd shows what the hook would do with a request right now, and why.
type ExplainCmd struct {
	What     string `arg:"" help:"A system type (e.g. x86_64-linux) or a .drv file."`
	Features string `arg:"" optional:"" help:"Required features, comma-separated (with a system type)."`
	File     string `name:"file" short:"f" type:"path" help:"Machines file (default: as the hook reads it)."`
}

func (c *ExplainCmd) Run(ctx context.Context, g *Globals) error {
	conf := hookConfig()
	if c.File != "" {
		conf.MachinesFile = c.File
	}
	system, features, drv := c.What, machines.ParseRequestFeatures(c.Features), ""
	if strings.HasSuffix(c.What, ".drv") || strings.Contains(c.What, "/") {
		var err error
		if system, features, err = diagnose.DrvRequest(c.What); err != nil {
			return err
		}
		if drv, err = filepath.Abs(c.What); err != nil {
			return err
		}
	}
	h := &hook.Hook{Conf: conf, Out: os.Stdout, Runner: newRunner(conf.StateDir, g)}
	_, err := diagnose.ExplainDrv(ctx, h, system, features, drv, os.Stdout)
	return err
}
