// Command etcd is upstream's etcd server, built from its module (go install fails on etcd's replaces).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
