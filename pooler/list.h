/* pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
 *
 * Intrusive circular doubly-linked lists. Every pooled object sits on exactly one state list
 * (style.md rule 15), so moving an object between lists is its state change.
 */
#ifndef PGPILOT_POOLER_LIST_H
#define PGPILOT_POOLER_LIST_H

#include <stddef.h>
#include <stdbool.h>

typedef struct List {
	struct List *next, *prev;
} List;

#define LIST_INIT(name) { &(name), &(name) }
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void list_init(List *l)
{
	l->next = l->prev = l;
}

static inline bool list_empty(const List *l)
{
	return l->next == l;
}

static inline void list_append(List *head, List *item)
{
	item->prev = head->prev;
	item->next = head;
	head->prev->next = item;
	head->prev = item;
}

static inline void list_prepend(List *head, List *item)
{
	item->next = head->next;
	item->prev = head;
	head->next->prev = item;
	head->next = item;
}

static inline void list_del(List *item)
{
	item->prev->next = item->next;
	item->next->prev = item->prev;
	item->next = item->prev = item;
}

static inline List *list_first(const List *head)
{
	return list_empty(head) ? NULL : head->next;
}

#define list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
#define list_for_each_safe(pos, tmp, head) \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif
