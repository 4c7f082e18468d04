target "default" {
  tags = ["app:${VERSION}"]
}
