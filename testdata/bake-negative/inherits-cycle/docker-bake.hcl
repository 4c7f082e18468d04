target "default" {
  inherits = ["a"]
}
target "a" {
  inherits = ["b"]
}
target "b" {
  inherits = ["a"]
}
