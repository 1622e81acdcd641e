from aiohttp import web


def make_gelbooru(emulator):
    return web.Application()


def make_safebooru(emulator):
    return web.Application()
