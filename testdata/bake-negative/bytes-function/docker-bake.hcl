target "default" {
  args = { N = byteslen("abc") }
}
