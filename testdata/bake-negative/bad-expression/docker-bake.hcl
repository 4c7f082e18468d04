target "default" {
  args = { N = 1 + "x" }
}
