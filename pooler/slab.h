/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Slab: a free-list allocator for one fixed-size object type (clients, servers, I/O buffers).
 * Objects are carved from chunks and never returned to malloc, which keeps per-connection memory
 * at the object's size (no malloc header per object) and makes SHOW MEM exact.
 */
#ifndef PGPILOT_POOLER_SLAB_H
#define PGPILOT_POOLER_SLAB_H

#include <stdbool.h>
#include <stddef.h>

typedef struct Slab Slab;

Slab *slab_new(const char *name, size_t obj_size);
void slab_free(Slab *s);
/* A zeroed object, or NULL when memory is exhausted. */
void *slab_alloc(Slab *s);
/* The same without zeroing (I/O buffers: zeroing 4 KiB per read would cost more than the read). */
void *slab_alloc_raw(Slab *s);
/* Return an object; it must come from this slab. */
void slab_release(Slab *s, void *obj);

/* For SHOW MEM: name, object size, objects in use + free, bytes allocated. */
typedef void (*SlabStatsFunc)(void *arg, const char *name, size_t size, size_t used, size_t free_cnt,
			      size_t memtotal);
void slab_stats(SlabStatsFunc fn, void *arg);

#endif
