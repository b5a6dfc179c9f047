package main

import (
	"context"
	"os"
	"path/filepath"

	"offload/hook"
	"offload/storeio"
)

// ArchiveCmd groups the operators' tools for store archives.
type ArchiveCmd struct {
	Dump    ArchiveDumpCmd    `cmd:"" help:"Write the nar of PATH on stdout."`
	Restore ArchiveRestoreCmd `cmd:"" help:"Restore a nar read on stdin into DIR (which must not exist)."`
	Verify  ArchiveVerifyCmd  `cmd:"" help:"Check an export bundle read on stdin: one line per item, exit 1 if any is bad."`
}

type ArchiveDumpCmd struct {
	Path string `arg:"" type:"path" help:"File, directory or symlink to archive."`
}

func (c *ArchiveDumpCmd) Run(ctx context.Context) error {
	return storeio.Dump(os.Stdout, c.Path)
}

type ArchiveRestoreCmd struct {
	Dir string `arg:"" type:"path" help:"Where to restore; must not exist."`
}

func (c *ArchiveRestoreCmd) Run(ctx context.Context) error {
	return storeio.Restore(os.Stdin, c.Dir)
}

type ArchiveVerifyCmd struct {
	ACL string `name:"acl" type:"path" help:"Authorized keys (default: $GUIX_CONFIGURATION_DIRECTORY/acl)."`
}

func (c *ArchiveVerifyCmd) Run(ctx context.Context) error {
	path := c.ACL
	if path == "" {
		path = filepath.Join(hook.ConfigFromEnv(os.Getenv).ConfDir, "acl")
	}
	acl, err := storeio.LoadACL(path)
	if err != nil {
		return err
	}
	return storeio.VerifyBundle(os.Stdin, acl, os.Stdout)
}
