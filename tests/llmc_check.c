/* Reads llm.c .bin token shards with the checks of llm.c's llmc/dataloader.h
 * (dataloader_load_shard_): a 256 x int32 header, magic 20240520 and version 1 for uint16
 * tokens (the llama3 branch's 20240801 / 7 for uint32 is accepted too), ntok > 0, and
 * file size == 256*4 + ntok * sizeof(token). For each file it prints one line:
 *     <ntok> <sum of tokens> <sum of token * (i+1)>      (both mod 2^64)
 * and exits 1 with llm.c's message at the first file that fails a check.
 * Build: cc -O2 -o llmc_check llmc_check.c */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define HEADER_SIZE 256

static int fail(const char *path, const char *msg) {
    fprintf(stderr, "%s: %s\n", path, msg);
    return 1;
}

int main(int argc, char **argv) {
    static unsigned char buf[1 << 16];
    for (int a = 1; a < argc; a++) {
        const char *path = argv[a];
        FILE *f = fopen(path, "rb");
        if (f == NULL) return fail(path, "Error opening file");
        int32_t header[HEADER_SIZE];
        if (fread(header, sizeof(int32_t), HEADER_SIZE, f) != HEADER_SIZE)
            return fail(path, "Error: file is shorter than the header");
        size_t tok_size;
        if (header[0] == 20240520 && header[1] == 1) {
            tok_size = 2;
        } else if (header[0] == 20240801 && header[1] == 7) {
            tok_size = 4;
        } else if (header[0] != 20240520 && header[0] != 20240801) {
            return fail(path, "Bad magic in the data file\n---> HINT: Are you passing in a correct file?\n"
                              "---> HINT: The data encoding may have changed, re-run data prepro or refer again to README.");
        } else {
            return fail(path, "Bad version in data file");
        }
        int64_t ntok = header[2];
        if (!(ntok > 0)) return fail(path, "Assertion failed: ntok > 0");
        fseek(f, 0, SEEK_END);
        long file_size = ftell(f);
        long expected = HEADER_SIZE * sizeof(int32_t) + ntok * (long)tok_size;
        if (file_size != expected) return fail(path, "Error: file size is not as expected");
        fseek(f, HEADER_SIZE * sizeof(int32_t), SEEK_SET);
        uint64_t sum = 0, wsum = 0, i = 0;
        size_t n;
        while ((n = fread(buf, tok_size, sizeof(buf) / tok_size, f)) > 0) {
            for (size_t k = 0; k < n; k++) {
                uint64_t t = tok_size == 2 ? ((uint16_t *)buf)[k] : ((uint32_t *)buf)[k];
                sum += t;
                wsum += t * ++i;
            }
        }
        fclose(f);
        if ((int64_t)i != ntok) return fail(path, "Error: short read");
        printf("%lld %llu %llu\n", (long long)ntok, (unsigned long long)sum, (unsigned long long)wsum);
    }
    return 0;
}
