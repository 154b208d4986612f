// The only C header of liblzma that the Decompression target sees.
#include <lzma.h>

/// LZMA_CONCATENATED is a macro with a cast, which Swift does not import.
static const uint32_t clzma_concatenated = LZMA_CONCATENATED;
