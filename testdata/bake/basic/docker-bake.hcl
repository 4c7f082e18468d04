# A group of two targets with the common attributes.
group "default" {
  targets = ["api", "web"]
}

target "api" {
  description = "the API server"
  context     = "services/api"
  dockerfile  = "Dockerfile.api"
  target      = "runtime"
  args = {
    GO_VERSION = "1.22"
    DEBUG      = 0
  }
  labels = {
    "org.opencontainers.image.title" = "api"
  }
  tags      = ["registry.example/api:latest", "registry.example/api:latest", ""]
  platforms = ["linux/amd64", "linux/arm64"]
  pull      = true
  no-cache-filter = ["deps"]
  network   = "host"
}

target "web" {
  context = "cwd://web"
  dockerfile-inline = "FROM scratch\nCOPY index.html /\n"
  annotations = ["index:org.opencontainers.image.source=https://example/web"]
  shm-size = "128m"
  ulimits = ["nofile=1024:2048"]
  extra-hosts = { "db.local" = "10.0.0.2" }
  resources = { memory = "512m", cpu-shares = 512 }
}
