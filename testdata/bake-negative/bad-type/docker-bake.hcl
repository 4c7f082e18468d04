variable "PORT" {
  type    = number
  default = "eighty"
}
target "default" {}
