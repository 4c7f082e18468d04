target "_common" {
  args   = { BASE = "alpine", SHARED = "common" }
  labels = { team = "platform" }
  cache-from = ["type=registry,ref=registry.example/cache:common"]
}
target "_release" {
  args      = { SHARED = "release", MODE = "release" }
  platforms = ["linux/amd64", "linux/arm64"]
}
target "_tagged" {
  inherits = ["_common"]
  tags     = ["registry.example/base:1"]
}
target "app" {
  inherits = ["_tagged", "_release"]
  args     = { APP = "1" }
}
target "app-debug" {
  inherits = ["app"]
  args     = { MODE = "debug" }
  tags     = ["registry.example/app:debug"]
}
