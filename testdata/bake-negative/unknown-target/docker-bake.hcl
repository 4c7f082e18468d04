group "default" {
  targets = ["app", "missing"]
}
target "app" {}
