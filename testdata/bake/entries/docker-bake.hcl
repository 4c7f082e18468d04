variable "HOME_DIR" {
  default = "/nonexistent"
}

target "deps" {
  dockerfile = "deps.Dockerfile"
}

target "default" {
  contexts = {
    deps  = "target:deps"
    tools = "docker-image://registry.example/tools:1"
    empty = ""
  }
  cache-from = [
    "registry.example/app:cache",
    "type=local,src=.cache",
    { type = "gha", scope = "main" },
  ]
  cache-to = ["type=registry,ref=registry.example/app:cache,mode=max"]
  output   = ["type=oci,dest=out/app.tar", { type = "local", dest = "out/fs" }]
  secret   = ["id=token,env=GITHUB_TOKEN", "id=npmrc,src=${HOME_DIR}/.npmrc", { id = "key", src = "key.pem" }]
  ssh      = ["default", "deploy=/keys/a,/keys/b"]
  attest   = ["type=sbom", "type=provenance,mode=max", { type = "sbom", disabled = true }]
  call     = "check"
}
