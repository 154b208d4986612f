// The only C header of libumockdev that the board emulator sees.
#include <umockdev.h>
