function "tag" {
  params = [repo, version]
  result = "${repo}:${version}"
}

function "tags" {
  params          = [repo]
  variadic_params = versions
  result          = [for v in versions : tag(repo, v)]
}

variable "VERSIONS" {
  default = ["1", "1.2", "1.2.3"]
}

variable "EXTRA" {
  default = { debug = "true", trace = "" }
}

target "default" {
  tags = tags("registry.example/app", VERSIONS...)
  args = merge(
    { for k, v in EXTRA : upper(k) => v if v != "" },
    {
      COUNT  = length([for v in VERSIONS : v if length(split(".", v)) > 1])
      FIRST  = element(VERSIONS, 0)
      MAX    = max(3, 9, 4)
      RANGE  = join(" ", [for n in range(3) : format("%d", n)])
      CIDR   = cidrsubnet("10.0.0.0/16", 8, 3)
      SCRIPT = <<-EOT
        echo %{ for v in VERSIONS ~}
        ${v} %{ endfor ~}
      EOT
    }
  )
}
