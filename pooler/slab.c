/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Fixed-size object allocator: chunks of objects threaded on a free list. Chunks grow
 * geometrically (from 16 objects up to 1024 per chunk) so small pools stay small and 10,000
 * clients cost a handful of mallocs.
 */
#include "pooler/slab.h"

#include <stdlib.h>
#include <string.h>

typedef struct SlabChunk {
	struct SlabChunk *next;
} SlabChunk;

typedef struct FreeObj {
	struct FreeObj *next;
} FreeObj;

struct Slab {
	const char *name;
	size_t obj_size;
	size_t used;
	size_t free_cnt;
	size_t total_bytes;
	size_t next_chunk_objs;
	FreeObj *free_list;
	SlabChunk *chunks;
	Slab *next_slab; /* registry for slab_stats */
};

static Slab *all_slabs;

Slab *slab_new(const char *name, size_t obj_size)
{
	Slab *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->name = name;
	/* keep objects pointer-aligned and large enough for the free-list link */
	if (obj_size < sizeof(FreeObj))
		obj_size = sizeof(FreeObj);
	s->obj_size = (obj_size + 15) & ~(size_t)15;
	s->next_chunk_objs = 16;
	s->next_slab = all_slabs;
	all_slabs = s;
	return s;
}

void slab_free(Slab *s)
{
	Slab **pp;

	if (!s)
		return;
	for (pp = &all_slabs; *pp; pp = &(*pp)->next_slab) {
		if (*pp == s) {
			*pp = s->next_slab;
			break;
		}
	}
	while (s->chunks) {
		SlabChunk *c = s->chunks;
		s->chunks = c->next;
		free(c);
	}
	free(s);
}

static bool slab_grow(Slab *s)
{
	size_t n = s->next_chunk_objs;
	size_t hdr = (sizeof(SlabChunk) + 15) & ~(size_t)15;
	SlabChunk *c = malloc(hdr + n * s->obj_size);
	char *p;

	if (!c)
		return false;
	c->next = s->chunks;
	s->chunks = c;
	s->total_bytes += hdr + n * s->obj_size;
	p = (char *)c + hdr;
	for (size_t i = 0; i < n; i++) {
		FreeObj *o = (FreeObj *)(p + i * s->obj_size);
		o->next = s->free_list;
		s->free_list = o;
	}
	s->free_cnt += n;
	if (s->next_chunk_objs < 1024)
		s->next_chunk_objs *= 2;
	return true;
}

void *slab_alloc_raw(Slab *s)
{
	FreeObj *o;

	if (!s->free_list && !slab_grow(s))
		return NULL;
	o = s->free_list;
	s->free_list = o->next;
	s->free_cnt--;
	s->used++;
	return o;
}

void *slab_alloc(Slab *s)
{
	void *o = slab_alloc_raw(s);

	if (o)
		memset(o, 0, s->obj_size);
	return o;
}

void slab_release(Slab *s, void *obj)
{
	FreeObj *o = obj;

	if (!obj)
		return;
	o->next = s->free_list;
	s->free_list = o;
	s->free_cnt++;
	s->used--;
}

void slab_stats(SlabStatsFunc fn, void *arg)
{
	for (Slab *s = all_slabs; s; s = s->next_slab)
		fn(arg, s->name, s->obj_size, s->used, s->free_cnt, s->total_bytes);
}
