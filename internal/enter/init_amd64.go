package enter

import _ "embed"

//go:embed init_amd64.elf
var initELF []byte
