#!/bin/sh
# The "build" step of the example: writes a message of the day.
echo "$1"
echo "built at stage build by $(id -u):$(id -g) in $(pwd)"
