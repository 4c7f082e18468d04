target "default" {
  tags = [lowercase("APP")]
}
