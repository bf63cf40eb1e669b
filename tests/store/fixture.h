/*
 * fixture.h: what the store tests share: a mkdtemp directory with a store
 * path in it (f->dir, not created yet: the store creates it, with its mode),
 * optionally a store opened there, and removal of the whole tree after.
 * Header-only (static inline): each test binary takes what it uses.
 */
#ifndef SPIM_TEST_STORE_FIXTURE_H
#define SPIM_TEST_STORE_FIXTURE_H

#include "store.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fx {
    char root[64];
    char dir[128];
    struct spim_store *st;
};

/* The directory only; the test opens the store. */
static inline int fx_setup_dir(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    snprintf(f->root, sizeof(f->root), "/tmp/spim_test_XXXXXX");
    if (mkdtemp(f->root) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->dir, sizeof(f->dir), "%s/db", f->root);
    *state = f;
    return 0;
}

/* The directory and a store created in it. */
static inline int fx_setup_store(void **state)
{
    struct fx *f;

    if (fx_setup_dir(state) != 0)
        return -1;
    f = *state;
    if (spim_store_open(f->dir, SPIM_STORE_CREATE, 0, &f->st) != 0) {
        rmdir(f->root);
        free(f);
        return -1;
    }
    return 0;
}

static inline void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    char sub[512];

    if (d == NULL) {
        unlink(path);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name) >= sizeof(sub))
            continue; /* the test trees are shallow: cannot happen */
        rm_tree(sub);
    }
    closedir(d);
    rmdir(path);
}

static inline int fx_teardown(void **state)
{
    struct fx *f = *state;

    spim_store_close(f->st);
    rm_tree(f->root);
    free(f);
    return 0;
}

static inline struct spim_slice sl(const char *s)
{
    return (struct spim_slice){s, strlen(s)};
}

#endif
