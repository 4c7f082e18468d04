variable "GO" {
  default = ["1.21", "1.22"]
}

target "build" {
  name = "build-${replace(go, ".", "_")}-${os}"
  matrix = {
    go = GO
    os = ["linux", "windows"]
  }
  args = {
    GO_VERSION = go
    GOOS       = os
  }
  tags = ["registry.example/tool:${go}-${os}"]
}

target "report" {
  # Reads another target's attribute.
  args = {
    FIRST_TAG = target.build-1_21-linux.tags[0]
    NAME      = target.build-1_22-windows.name
  }
}

group "default" {
  targets = ["build", "report"]
}
