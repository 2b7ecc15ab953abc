module hda.shitops.dev/e2e-probe

go 1.22
