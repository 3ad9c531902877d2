module example.com/two-passes

go 1.24
