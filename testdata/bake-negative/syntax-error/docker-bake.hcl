target "default" {
  tags = ["a", "b"
}
