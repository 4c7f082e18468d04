TAG = "2.0-override"

target "web" {
  args      = { NODE = "22", EXTRA = "yes" }
  platforms = ["linux/arm64"]
}
