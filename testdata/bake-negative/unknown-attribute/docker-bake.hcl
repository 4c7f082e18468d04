target "default" {
  context = "."
  platform = ["linux/amd64"]
}
